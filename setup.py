from pathlib import Path

from setuptools import find_packages, setup

setup(
    # The import package is tuswsgi; the distribution is not: PyPI's "tuswsgi" is another
    # project (a one-module WSGI filter, 0.5.5), which `pip install tuswsgi` would fetch.
    # "tuswsgi-server" was free when chosen (pip index versions / pip download: no
    # distribution; https://pypi.org/pypi/tuswsgi-server/json: 404).  "tus-wsgi" was free
    # too, but PyPI refuses names that differ from an existing one only by "-", "_", ".".
    name="tuswsgi-server",
    version="0.1.0",
    description="A resumable-upload server speaking tus 1.0.0, as a WSGI application",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    # What the dependencies need (gunicorn>=27 and filelock>=3.30 both say >=3.10);
    # tests/unit/test_packaging.py checks it against their oldest allowed releases.
    python_requires=">=3.10",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Application",
    ],
    packages=find_packages(include=["tuswsgi", "tuswsgi.*"]),
    include_package_data=True,
    package_data={"tuswsgi": ["static/*"]},
    install_requires=[
        "werkzeug>=2.3",
        "filelock>=3.30",
        "gunicorn>=23.0",  # tuswsgi.server.compat.FLOOR; CI runs the worker's suites there too
    ],
    extras_require={
        "metrics": ["prometheus_client>=0.17"],
        "test": ["pytest>=7", "tuspy>=1.0", "requests>=2.28", "ruff", "mypy", "prometheus_client>=0.17",
                 "playwright>=1.40", "flask>=2.3", "django>=4.2"],
    },
    entry_points={"console_scripts": ["tuswsgi = tuswsgi.cli:main"]},
)
