"""passcode: signed short-lived QR passes, verified live at scanner terminals."""
