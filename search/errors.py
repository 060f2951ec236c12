"""The search's one-line error: a run that cannot start, continue or be exported as asked.

Its own module because `python -m search.run` runs search/run.py as `__main__`: a class defined
there and raised from search.tuner would be another class than the one `main` catches."""


class SearchError(Exception):
    """A run that cannot start or continue: name collision, unreachable cluster, impossible budget or resources."""
