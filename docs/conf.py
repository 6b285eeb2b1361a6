# Sphinx configuration of the pyro_seq documentation. Build it with `bash scripts/docs.sh`
# (warnings are errors; the tutorials run in smoke mode).
#
# Environment:
#   PYRO_SEQ_DATA                  data root of the tutorials (scripts/docs.sh sets ../shared/data)
#   PYRO_SEQ_DOCS_TUTORIALS=0      render the tutorials without running them (no figures; fast)
#   PYRO_SEQ_DOCS_INTERSPHINX=1    link torch, pyro and Python names to their online docs; off by
#                                  default so that the build needs no network: without it those
#                                  names render as code (Sphinx is not nitpicky here, so an
#                                  unresolved name is no warning)

import os
import re
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS))

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pyro_seq  # noqa: E402

project = "pyro_seq"
author = "Contributors to the pyro_seq project"
copyright = "Contributors to the pyro_seq project"
version = release = pyro_seq.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    # MathJax 3 copied into _static/mathjax: maths renders without a CDN (offline, closed networks)
    "sphinx-mathjax-offline",
]
if os.environ.get("PYRO_SEQ_DOCS_INTERSPHINX") == "1":
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "torch": ("https://pytorch.org/docs/stable", None),
        "pyro": ("https://docs.pyro.ai/en/stable", None),
    }

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
master_doc = "index"
exclude_patterns = [
    "_build",
    "README.md",  # the GitHub index of docs/; index.rst is the site's
    "families.md",  # shown split: families/index.md and one page per family include its sections
    "tutorials/*.ipynb",
    "tutorials/*.py",
    "tutorials/*.zip",
    "tutorials/*.json",
    "tutorials/*.md5",
    "sg_execution_times.rst",
    "tutorials/sg_execution_times.rst",
    "figures/**",  # tables that BENCHMARKS.md shows; not pages
]

# -- autodoc: docstrings are Sphinx field lists (:param x:, :returns:), as in Pyro ---------------
autodoc_member_order = "bysource"
autodoc_typehints = "none"
autodoc_inherit_docstrings = False
add_module_names = False

# -- markdown pages -------------------------------------------------------------------------
myst_heading_anchors = 4
# myst.header: the included pages start at "##" under the page's own title; config.cache: the
# gallery configuration holds functions (the environment is rebuilt each time, -E)
suppress_warnings = ["myst.header", "config.cache"]

# -- html -----------------------------------------------------------------------------------------
html_theme = "sphinx_rtd_theme"
html_title = f"pyro_seq {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {"navigation_depth": 3}

# -- tutorials: tutorials/*.py run in smoke mode, their figures (PNGs they write) shown -----------
BUILD = DOCS / "_build"
TUTORIAL_OUT = BUILD / "tutorial_out"


def data_root():
    env = os.environ.get("PYRO_SEQ_DATA")
    if env:
        return env
    shared = ROOT.parent / "shared" / "data"
    return str(shared) if shared.is_dir() else None


def tutorial_argv(gallery_conf, script_vars):
    # every tutorial takes --smoke, --out and --data-root (tests/tutorials runs them the same way)
    import builtins

    # sphinx-gallery runs the script without __file__ in its globals; a tutorial that finds its
    # repository from it reads the builtin instead
    builtins.__file__ = str(script_vars["src_file"])
    name = Path(script_vars["src_file"]).stem
    out = TUTORIAL_OUT / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    argv = ["--smoke", "--out", str(out)]
    root = data_root()
    if root:
        argv += ["--data-root", root]
    return argv


class TutorialFigures:
    """sphinx-gallery image scraper: the PNGs a tutorial wrote to its --out folder."""

    def __repr__(self):  # sphinx-gallery keys its cache on the repr
        return "TutorialFigures"

    def __call__(self, block, block_vars, gallery_conf):
        from sphinx_gallery.scrapers import figure_rst

        name = Path(block_vars["src_file"]).stem
        out = TUTORIAL_OUT / name
        pngs = sorted(out.rglob("*.png")) if out.is_dir() else []
        paths = []
        for png, target in zip(pngs, block_vars["image_path_iterator"]):
            shutil.copyfile(png, target)
            paths.append(target)
        return figure_rst(paths, gallery_conf["src_dir"])


class ResetPyro:
    def __repr__(self):
        return "ResetPyro"

    def __call__(self, gallery_conf, fname):
        import pyro

        pyro.clear_param_store()
        pyro.set_rng_seed(0)


sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "tutorials"),
    "gallery_dirs": "tutorials",
    "filename_pattern": r".*\.py$",
    "plot_gallery": os.environ.get("PYRO_SEQ_DOCS_TUTORIALS", "1") != "0",
    "reset_argv": tutorial_argv,
    "image_scrapers": (TutorialFigures(),),
    "reset_modules": ("matplotlib", ResetPyro()),
    "abort_on_example_error": True,
    "download_all_examples": False,
    "remove_config_comments": True,
    "min_reported_time": 1e9,
    "write_computation_times": False,
    "show_signature": False,
}

# -- links between the markdown pages: the files are written for GitHub (README.md, DESIGN.md,
# BENCHMARKS.md and docs/*.md link each other by relative path); here each link is rewritten to
# the page that shows that file -------------------------------------------------------------------
PAGES = {
    "README.md": "/getting_started.md",
    "DESIGN.md": "/design.md",
    "BENCHMARKS.md": "/benchmarks.md",
    "docs/README.md": "/index.rst",
    "docs/families.md": "/families/index.md",
    "docs/command_line.md": "/command_line.md",
    "docs/data.md": "/data.md",
    "docs/testing.md": "/testing.md",
}
ANCHOR_PAGES = {"how-to-add-a-model-family": "/adding_a_family.md"}
FAMILY_ANCHORS = {}  # filled from families/*.md: a section of families.md -> the page that shows it
LINK = re.compile(r"(?<!!)\[([^\]]*)\]\(([^)\s]+)\)")


def rewrite_links(text, source):
    """``source``: the repository path of the markdown file whose text this is."""
    base = Path(source).parent

    def repl(match):
        label, target = match.groups()
        if re.match(r"[a-z]+:", target) or target.startswith(("/", "#")):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(base / path).replace(os.sep, "/")
        if resolved.startswith("tutorials/") and resolved.endswith(".py"):
            page = "/" + resolved[:-3] + ".rst"
        elif resolved in PAGES:
            page = ANCHOR_PAGES.get(anchor) or PAGES[resolved]
            if resolved == "docs/families.md" and anchor in FAMILY_ANCHORS:
                page, anchor = FAMILY_ANCHORS[anchor], ""  # the section is that page
        elif resolved.startswith("docs/") and (ROOT / resolved).is_file():
            page = "/" + resolved[len("docs/"):]  # a figure or table: a download link
        else:
            return match.group(0)
        return f"[{label}]({page}{'#' + anchor if anchor else ''})"

    return LINK.sub(repl, text)


def on_source_read(app, docname, source):
    path = Path(app.env.doc2path(docname))
    if path.suffix == ".md":
        source[0] = rewrite_links(source[0], path.resolve().relative_to(ROOT).as_posix())


def on_include_read(app, relative_path, parent_docname, content):
    path = (DOCS / relative_path).resolve()
    if path.suffix == ".md":
        content[0] = rewrite_links(content[0], path.relative_to(ROOT).as_posix())


def slug(heading):
    # GitHub's (and myst's) heading anchors
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def setup(app):
    for page in sorted((DOCS / "families").glob("*.md")):
        if page.stem == "index":
            continue
        for start in re.findall(r':start-after: "## (.*)"', page.read_text()):
            FAMILY_ANCHORS[slug(start)] = f"/families/{page.stem}.md"
    app.connect("source-read", on_source_read)
    app.connect("include-read", on_include_read)
    app.connect("missing-reference", resolve_short_name)


# -- references by short name: a docstring's :class:`Trainer` or :func:`particle_filter` names an
# object documented under another path (the API pages list each name where the user imports it,
# pyro_seq.training.Trainer, not pyro_seq.training.trainer.Trainer); resolve it when exactly one
# documented object (or one under the named module's package) ends with that name ---------------
def resolve_short_name(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    from sphinx.util.nodes import make_refnode

    target = node["reftarget"].lstrip("~.")
    domain = env.get_domain("py")
    objects = domain.objects
    if node.get("reftype") == "mod":
        # a submodule (pyro_seq.losses.warmup): the page of the nearest documented package
        while target.startswith("pyro_seq."):
            target = target.rpartition(".")[0]
            if target in domain.modules:
                entry = domain.modules[target]
                return make_refnode(
                    app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, target
                )
        return None
    if target.startswith("pyro_seq.") or "." not in target:
        tail = target.rpartition(".")[2]
        candidates = [n for n in objects if n.endswith("." + tail) and n.startswith("pyro_seq.")]
        if len(candidates) > 1 and "." in target:
            # pyro_seq.training.trainer.Trainer -> the one under the longest common package
            scored = sorted(candidates, key=lambda n: -len(os.path.commonprefix([n, target])))
            candidates = scored[:1]
        candidates = [n for n in candidates if not objects[n].aliased] or candidates
        if len(candidates) == 1:
            obj = objects[candidates[0]]
            return make_refnode(
                app.builder, node["refdoc"], obj.docname, obj.node_id, contnode, candidates[0]
            )
    return None
