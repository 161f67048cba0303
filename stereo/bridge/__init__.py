"""The broker bridge (work in progress, docs/scale-out.md): a supervised process that carries a
hub's broadcasts to a broker stream and back, so several hubs share one total order."""
