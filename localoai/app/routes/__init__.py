"""Routes by endpoint family. Each is thin: parse the body, call the handler, encode."""
