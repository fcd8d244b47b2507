"""Several cameras: one perception_node per camera namespace, or one batched
perception_node serving all of them (`batched:=true`: one model in memory, a
latest-frame slot per camera, served round-robin). scene_node per camera with
`scene:=true`; one memory_node for all of them with `memory:=true`.

    ros2 launch mr_mllm_ros multi_camera.launch.py cameras:=front,rear,left
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode


def _nodes(context):
    cameras = [c.strip().strip('/') for c in
               LaunchConfiguration('cameras').perform(context).split(',') if c.strip()]
    batched = LaunchConfiguration('batched').perform(context).lower() == 'true'
    scene = LaunchConfiguration('scene').perform(context).lower() == 'true'
    memory = LaunchConfiguration('memory').perform(context).lower() == 'true'
    params = [LaunchConfiguration('params_file').perform(context),
              {'use_sim_time': LaunchConfiguration('use_sim_time').perform(context) == 'true'}]
    ros_args = ['--ros-args', '--log-level', LaunchConfiguration('log_level').perform(context)]
    nodes = []
    if batched:
        nodes.append(LifecycleNode(package='mr_mllm_ros', executable='perception_node',
                                   name='perception_node', namespace='', output='screen',
                                   parameters=params + [{'perception.cameras': cameras}],
                                   arguments=ros_args))
    for cam in cameras:
        if not batched:
            nodes.append(LifecycleNode(package='mr_mllm_ros', executable='perception_node',
                                       name='perception_node', namespace=cam, output='screen',
                                       parameters=params, arguments=ros_args))
        if scene:
            nodes.append(LifecycleNode(package='mr_mllm_ros', executable='scene_node',
                                       name='scene_node', namespace=cam, output='screen',
                                       parameters=params, arguments=ros_args))
    if memory:  # one memory for every camera
        nodes.append(LifecycleNode(package='mr_mllm_ros', executable='memory_node',
                                   name='memory_node', namespace='', output='screen',
                                   parameters=params + [{'memory.cameras': cameras}],
                                   arguments=ros_args))
    return nodes


def generate_launch_description():
    share = get_package_share_directory('mr_mllm_ros')
    return LaunchDescription([
        DeclareLaunchArgument('cameras', default_value='front,rear',
                              description='Comma-separated camera namespaces'),
        DeclareLaunchArgument('batched', default_value='false',
                              description='One perception_node for all cameras'),
        DeclareLaunchArgument('scene', default_value='false',
                              description='Also start one scene_node per camera'),
        DeclareLaunchArgument('memory', default_value='false',
                              description='Also start one memory_node for all cameras '
                                          '(query_memory service)'),
        DeclareLaunchArgument('params_file',
                              default_value=os.path.join(share, 'config', 'mr_mllm.yaml'),
                              description='ROS 2 parameters file (see config/mr_mllm.yaml)'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='Use /clock (bag replay, simulation)'),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='debug, info, warn, error'),
        DeclareLaunchArgument('fastdds_profile',
                              default_value=os.path.join(share, 'config',
                                                         'fastdds_large_images.xml'),
                              description='Fast DDS XML profile for large images (16 MiB '
                                          'shared-memory segment); point it at your own '
                                          'profile to replace it'),
        SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE',
                               LaunchConfiguration('fastdds_profile')),
        OpaqueFunction(function=_nodes),
    ])
