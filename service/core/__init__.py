"""The model core: one served model's request path (decode, batch, predict, encode), its
runtimes, preprocessing, batching and the forecaster's band."""
