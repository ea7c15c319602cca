"""The package's warning category and the checks of counts that every front end shares."""


class MenoWarning(UserWarning):
    """A warning from meno-jupyter (a measurement it could not make, a fallback it took)."""


def check_count(value: float, *, minimum: int, name: str) -> None:
    """Raise ValueError unless ``value`` is at least ``minimum``; the message names ``name``.

    Examples
    --------
    >>> check_count(3, minimum=1, name="--top")
    >>> check_count(0, minimum=1, name="--top")
    Traceback (most recent call last):
    ...
    ValueError: --top must be at least 1, got 0
    """
    if value < minimum:
        bound = "0 or more" if minimum == 0 else f"at least {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value}")
