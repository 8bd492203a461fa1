"""Reading and writing files: safetensors read safely and written streaming, and formats/, every
SD3.5 file as users have it and the file this pack writes."""
