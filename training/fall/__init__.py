"""The fall model: data and candidates (numpy only) in data.py, training in train.py."""
