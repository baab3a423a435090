"""Operating a running fleet: what it is doing now, and (to come) pausing, draining and
resuming queues, dead letters, replay and cancel. The CLI's incident commands render
what these functions return; nothing here prints."""
