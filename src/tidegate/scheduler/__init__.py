"""The scheduler: admission, the loop that walks jobs along legal edges."""
