"""Shared pieces of the Streamlit pages: store access, URL state, safe text rendering. No SQL, no torch."""
