"""The small runtime every Zehanx service shares: settings, logging, errors, server start, clients."""
