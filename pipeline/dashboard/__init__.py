"""The operator's web dashboard: live cameras, the identity gallery (best crop per outfit) and the event feed.

Served by a running pipeline (`dashboard: {port: 8080}` in the config) in its own thread and event loop,
or by `python -m pipeline dashboard` as a read-only view of a store. Pages are plain HTML + JavaScript
(no build step) over a JSON API: /api/cameras, /api/identities, /api/events (+ /api/events/stream, SSE).
"""
