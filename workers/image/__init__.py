"""The image work a worker does to one file or one pair: decode, hashes, pictures inside frames, alignment and the explanation of an edit. Pure functions of files and pixels: no Redis, no catalog."""
