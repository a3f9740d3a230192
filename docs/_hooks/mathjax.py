"""MkDocs hook: serve MathJax with the site, from the ``django-static-mathjax`` package.

The formulas are written as TeX (``pymdownx.arithmatex`` in generic mode wraps
them in ``<span class="arithmatex">``); MathJax typesets them in the browser.
No CDN: the hook adds MathJax's self-contained SVG build (``es5/tex-svg.js``,
fonts included) from the installed package to the site's files, so the built
site renders formulas offline. ``mkdocs.yml`` lists it in ``extra_javascript``
after ``javascripts/mathjax-config.js``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

SITE_PATH = "javascripts/mathjax/tex-svg.js"


def _mathjax_dir() -> Path:
    spec = importlib.util.find_spec("mathjax")
    if spec is None or spec.origin is None:
        raise PluginError(
            "MathJax is not installed: pip install django-static-mathjax (in the dev extra)"
        )
    root = Path(spec.origin).parent / "static" / "mathjax"
    if not (root / "es5" / "tex-svg.js").is_file():
        raise PluginError(f"{root} holds no es5/tex-svg.js; reinstall django-static-mathjax")
    return root


def on_files(files: Files, config) -> Files:  # noqa: ARG001 - MkDocs signature
    """Add MathJax's ``tex-svg.js`` (and its licence) to the files the site is built from."""
    root = _mathjax_dir()
    for src, dest in ((root / "es5" / "tex-svg.js", SITE_PATH),
                      (root / "LICENSE", "javascripts/mathjax/LICENSE")):  # fmt: skip
        files.append(File.generated(config, dest, abs_src_path=str(src)))
    return files
