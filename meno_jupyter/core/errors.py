"""The package's warning category, so tests and users can filter meno-jupyter's own warnings."""


class MenoWarning(UserWarning):
    """A warning from meno-jupyter (a measurement it could not make, a fallback it took)."""
