"""One exception type for bad user input: the CLI prints its message on one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (arguments, configs, data files). Message is shown as one line."""
