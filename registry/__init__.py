"""The registry: its domain (``refs``, ``queries``, ``upload``, ``service``, ``safety/``, ``storage``,
``models``, ``auth``, ``sandbox``, ``maintenance``) knows no web; its REST blueprint is ``api.py``
with ``schemas.py``. Installed as ``modelyard.registry``; it never imports ``serving``."""
