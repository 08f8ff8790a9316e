"""The app's Azure Functions, one blueprint per area, each function a thin adapter onto shared/."""
