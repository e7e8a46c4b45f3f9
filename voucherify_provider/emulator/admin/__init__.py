"""The ``/_emulator`` admin routes (``routes``); their state lives in the backend, faults and rate limiter."""
