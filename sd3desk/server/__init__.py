"""The HTTP front door: the web page, sd3desk's API and AUTOMATIC1111's, on the runtime's queue."""
