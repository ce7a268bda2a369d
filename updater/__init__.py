"""The update checker and its schedule."""
