"""The app's pages, one script each; their order and names in the sidebar: ``ui/navigation.py``."""
