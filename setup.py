"""hccr: offline handwritten Chinese character recognition at scale (Beam + TensorFlow/Keras)."""
from setuptools import find_packages, setup

setup(
    name="hccr",
    version="0.1.0",
    description="Offline handwritten Chinese character recognition: CASIA-HWDB preprocessing "
                "with Apache Beam, Keras models, distributed training, evaluation and export.",
    python_requires=">=3.10",
    packages=find_packages(include=["beam_preprocess*", "models*", "trainers*", "launch*"]),
    include_package_data=True,
    install_requires=[
        "numpy>=1.23,<2",
        "keras>=3.5",
        "apache-beam[tfrecord]>=2.55",
        "pillow",
        "tqdm",  # progress bars of hccr-synth and hccr-eval (beam_preprocess/progress.py)
    ],
    extras_require={
        "tf": ["tensorflow>=2.16,<2.18", "matplotlib"],
        "io": ["tensorflow-io>=0.36"],
        "export": ["tf2onnx", "onnx", "onnxruntime", "ai-edge-litert"],
        "eval": ["scikit-learn", "matplotlib", "rapidfuzz"],  # rapidfuzz: CER's edit distance
    },
    entry_points={
        "console_scripts": [
            "hccr-inspect=beam_preprocess.contract.inspect_cli:main",
            "hccr-synth=beam_preprocess.synthetic.synth_cli:main",
            "hccr-preprocess=beam_preprocess.job.pipeline:main",
            "hccr-demo=launch.demo:main",
            "hccr-train=trainers.training.main:main",
            "hccr-launch=launch.cli:main",
            "hccr-eval=trainers.serving.eval_cli:main",
            "hccr-export=trainers.serving.export_cli:main",
            "hccr-predict=trainers.serving.predict_cli:main",
        ],
    },
)
