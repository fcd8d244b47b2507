"""The launch arguments every launch file declares (params file, sim time, log level, Fast
DDS profile) and the environment they set, so perception.launch.py and
multi_camera.launch.py declare them once."""

import os

from mr_mllm_ros.topology import DEFAULT_LOG_LEVEL


def common_launch_entities(share):
    """DeclareLaunchArgument for params_file, use_sim_time, log_level and fastdds_profile,
    then the SetEnvironmentVariable that points Fast DDS at the profile. `share` is the
    package's share directory. `launch` is imported here: mr_mllm_ros imports without it."""
    from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
    from launch.substitutions import LaunchConfiguration
    return [
        DeclareLaunchArgument('params_file',
                              default_value=os.path.join(share, 'config', 'mr_mllm.yaml'),
                              description='ROS 2 parameters file (see config/mr_mllm.yaml)'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='Use /clock (bag replay, simulation)'),
        DeclareLaunchArgument('log_level', default_value=DEFAULT_LOG_LEVEL,
                              description='debug, info, warn, error'),
        DeclareLaunchArgument('fastdds_profile',
                              default_value=os.path.join(share, 'config',
                                                         'fastdds_large_images.xml'),
                              description='Fast DDS XML profile for large images (16 MiB '
                                          'shared-memory segment); point it at your own '
                                          'profile to replace it'),
        SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE',
                               LaunchConfiguration('fastdds_profile')),
    ]
