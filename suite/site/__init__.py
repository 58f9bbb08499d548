"""The static results site (`attnbench site`): runs side by side, interactive charts, no server."""
