"""The web demo and REST API: a FastAPI app around one ``runtime.detector.Detector`` (``serving.app``),
the uvicorn server that runs it (``serving.server``) and the page it serves (``serving/static``)."""
