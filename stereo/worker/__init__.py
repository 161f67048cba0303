"""The worker side: the public :class:`~stereo.worker.api.Worker` an app receives (:mod:`.api`),
the listeners it accepts on (:mod:`.listeners`), and the process runtime (:mod:`.runtime`), which
loads the app (:mod:`.loader`) and drives the worker's hub connection: its
:class:`~stereo.outbox.Outbox` and its :class:`~stereo.worker.inbox.Inbox` of subscribed
:class:`~stereo.worker.inbox.MessageStream` iterators.

The public names are re-exported by :mod:`stereo`. This package imports nothing itself:
``python -m stereo.worker`` imports it before :mod:`.__main__` can defer stop signals.
"""
