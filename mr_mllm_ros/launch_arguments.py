"""The launch arguments every launch file declares (params file, sim time, log level, Fast
DDS profile) and the environment they set, and the LifecycleNode actions of a
topology.plan_graph plan, so perception.launch.py and multi_camera.launch.py write each
once."""

import os

from mr_mllm_ros.topology import DEFAULT_LOG_LEVEL, plan_graph


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


def plan_arguments():
    """DeclareLaunchArgument for what plan_nodes reads besides the common ones:
    image_topic, scene, memory."""
    from launch.actions import DeclareLaunchArgument
    return [
        DeclareLaunchArgument('image_topic', default_value='image',
                              description='Camera image topic the nodes subscribe to '
                                          '(relative names resolve in each camera '
                                          'namespace; compressed input: '
                                          '<image_topic>/compressed)'),
        DeclareLaunchArgument('scene', default_value='false',
                              description='Also start scene_node, one per camera '
                                          '(descriptions, VQA, alerts)'),
        DeclareLaunchArgument('memory', default_value='false',
                              description='Also start one memory_node for every camera '
                                          '(scene memory, query_memory service)'),
    ]


def plan_nodes(context, cameras: list[str], batched: bool = False):
    """One LifecycleNode per node of topology.plan_graph (the plan `mr-mllm up` starts) for
    `cameras`: perception_node, scene_node with `scene:=true`, memory_node with
    `memory:=true`, the camera images from `image_topic`; the params file, sim time and
    log level of the launch arguments. Called in an OpaqueFunction (`context`)."""
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import LifecycleNode

    def arg(name):
        return LaunchConfiguration(name).perform(context)
    kinds = ['perception'] + [k for k in ('scene', 'memory') if arg(k).lower() == 'true']
    params = [arg('params_file'), {'use_sim_time': arg('use_sim_time').lower() == 'true'}]
    return [LifecycleNode(package='mr_mllm_ros', executable=f'{p.kind}_node',
                          name=f'{p.kind}_node', namespace=p.namespace, output='screen',
                          parameters=params + ([p.parameters] if p.parameters else []),
                          remappings=list(p.remappings),
                          arguments=['--ros-args', '--log-level', arg('log_level')])
            for p in plan_graph(cameras, kinds, batched, image_topic=arg('image_topic'))]
