"""Operating a running fleet: what it is doing now (``fleet_status``), queue control
(``queues``: pause, drain, park, resume, purge), dead letters, replay and cancel. The CLI's
incident commands render what these functions return; nothing here prints."""
