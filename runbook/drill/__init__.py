"""``runbook drill``: a realistic incident injected into a simulated production, handled end to end."""
