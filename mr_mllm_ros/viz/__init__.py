"""Results for people to look at in Foxglove: message mapping (foxglove_messages.py) and
the layout (layout.py). Needs foxglove-sdk; no ROS."""
