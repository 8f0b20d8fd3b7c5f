"""Serve an exported model over HTTP (FastAPI on uvicorn, no Lightning).

    python serve.py runs/lenet_digits/version_0/checkpoints/best.onnx --port 8000
    curl -X POST --data-binary @digit.png -H "Content-Type: image/png" http://127.0.0.1:8000/predict
    python serve.py --help
"""

from project.inference.server import main

if __name__ == "__main__":
    main()
