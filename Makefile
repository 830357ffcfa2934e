# Shortcuts for the README's commands; run them from the root of the clone, in the environment you
# installed into (`make book` is `pip install -r requirements.txt && jupyter-book build .`).
PYTHON ?= python
JUPYTER_BOOK ?= jupyter-book

.PHONY: book install build test vendor clean

# Install everything, then build the whole book (every chapter executed; _build/html/index.html).
book: install
	$(JUPYTER_BOOK) build .

install:
	$(PYTHON) -m pip install -r requirements.txt

# Rebuild without reinstalling.
build:
	$(JUPYTER_BOOK) build .

# Unit tests, every chapter through nbval, the book build and the browser check of every page.
test:
	pytest

# Fetch MathJax, require.js and the widget manager into _vendor/ (needs npm): the book then renders
# formulas and widgets without network. Without it the pages load them from CDNs.
vendor:
	$(PYTHON) scripts/vendor_js.py

# Remove the built book (not _vendor/, nor the trained artifacts/, which are slow to remake).
clean:
	rm -rf _build
