from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="tuswsgi",
    version="0.1.0",
    description="A resumable-upload server speaking tus 1.0.0, as a WSGI application",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
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
