"""scripts/bench and scripts/cluster: keyrelay measured side by side with its peers."""
