"""The race against peer attribution libraries (needs the separate venv in bench/peers/requirements.txt)."""
