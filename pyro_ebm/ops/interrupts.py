"""Ctrl-C at a step boundary: long loops (``ebm.sample``, AIS) stop between two steps, with nothing half done."""

import signal
import threading

__all__ = ["deferred_interrupt"]


class deferred_interrupt:
    """
    A context manager for a loop of steps: inside it, a first Ctrl-C (SIGINT) sets :attr:`requested` instead of
    raising ``KeyboardInterrupt`` in the middle of a step, so the loop can stop at the next step boundary with
    every object consistent; a second Ctrl-C raises ``KeyboardInterrupt`` at once, as usual.

    It takes over SIGINT only where Python allows (the main thread) and only from Python's default handler; a
    handler of the user's own, or a loop in another thread, is left alone (``requested`` then stays ``False``
    and a ``KeyboardInterrupt`` is raised wherever it lands, as without this block).

    Example::

        with deferred_interrupt() as interrupt:
            for t in range(num_steps):
                if interrupt.requested:
                    break
                state = step(state)
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:  # NB: the second Ctrl-C: the user wants out now
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread() and (
            signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False
