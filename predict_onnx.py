"""Label images or table rows with an exported model alone (onnxruntime, no Lightning).

    python predict_onnx.py runs/lenet_digits/version_0/checkpoints/best.onnx INPUTS --output predictions.csv
    python predict_onnx.py --help
"""

from project.inference.predict import main

if __name__ == "__main__":
    main()
