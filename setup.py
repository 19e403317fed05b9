"""Installs ppsdg: the library and vantage6 algorithm package, its transports, and the launchers."""
from setuptools import find_packages, setup

setup(
    name="ppsdg",
    version="0.1.0",
    description="Privacy-preserving synthetic data generation by federated learning (gloo and vantage6)",
    python_requires=">=3.10",
    packages=find_packages(include=["ppsdg", "ppsdg.*", "backends"]),
    py_modules=["train", "main"],
    package_data={"ppsdg": ["digits.npz"]},
    install_requires=[
        "torch>=2.2",
        "numpy>=1.24",
        "pandas>=2.0",
        "msgpack>=1.0",
        "cryptography>=41",
        "pybase64>=1.5",
        "tqdm>=4.60",
        "opacus>=1.5",
        "randomgen>=2.1",
        "matplotlib>=3.7",
        "vantage6-algorithm-tools==4.15.2",
        "vantage6-client==4.15.2",
        "mbi==2.0.0",
        "jax==0.10.2",
        "jaxlib==0.10.2",
        "scikit-learn>=1.4",
        "pyarrow>=14",
    ],
    # sdmetrics (`ppsdg evaluate --sdmetrics`) requires pandas < 3: its extra downgrades pandas to 2.x.
    extras_require={"test": ["pytest>=8", "hypothesis>=6"], "bench": ["safetensors>=0.4", "py-spy>=0.3"],
                    "sdmetrics": ["sdmetrics>=0.30", "pandas>=2.0,<3"]},
    entry_points={"console_scripts": ["ppsdg=main:main"]},
)
