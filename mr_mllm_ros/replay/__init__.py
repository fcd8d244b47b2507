"""Offline analysis of recorded bags on the same core pipeline as the nodes.

bag_reader       rosbag2 sqlite3/mcap -> decoded frames (rosbags; salvage of damaged files)
runner           work units (bag, topic, time segment), Pipeline.process per frame, driver
outputs          results.jsonl (the source of truth), CSVs, resume bookkeeping
result_bags      the output bags, rebuilt from results.jsonl
bag_writer       the one way to open a bag writer (rosbag2, MCAP)
result_messages  mr_mllm_interfaces messages built and serialized with rosbags (no rclpy)
report           self-contained report.html
ray_fanout       the same units as Ray tasks, merged in the serial run's order

Nothing here imports rclpy: replay runs where ROS is not installed.
"""
