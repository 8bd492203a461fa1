class SD35FP8Error(Exception):
    """A problem the user can fix (a file, a folder, an option); the message says what and how."""
