"""The mobile web tier: a static page on onnxruntime-web that runs the mobile segments in the browser and
offloads to the edge (``dnnsplit serve --web``), and per-layer profiling inside a browser
(``dnnsplit profile --runtime browser``, and the page ``/web/profile.html`` for a real phone).

The page files are in ``static/``; ``dnnsplit.browser`` names them (and checks the vendored runtime) for
both this package and profiling.
"""
