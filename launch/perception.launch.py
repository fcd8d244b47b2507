"""One camera: perception_node (+ scene_node with `scene:=true`, memory_node with
`memory:=true`) in a camera namespace.

    ros2 launch mr_mllm_ros perception.launch.py namespace:=front_cam \
        params_file:=/path/to/my_params.yaml

Every default lives in config/mr_mllm.yaml (the installed copy is params_file's default);
a params file of your own lists only what it changes. Remap `image` to your camera topic
(e.g. `image:=/front_cam/color/image_raw`) with the `image_topic` argument.
"""

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from mr_mllm_ros.launch_arguments import common_launch_entities


def generate_launch_description():
    share = get_package_share_directory('mr_mllm_ros')
    args = [
        DeclareLaunchArgument('namespace', default_value='camera',
                              description='Camera namespace: topics are <ns>/image, '
                                          '<ns>/detections, ...'),
        DeclareLaunchArgument('image_topic', default_value='image',
                              description='Camera image topic the node subscribes to '
                                          '(relative names resolve in the namespace)'),
        DeclareLaunchArgument('scene', default_value='false',
                              description='Also start scene_node (descriptions, VQA, alerts)'),
        DeclareLaunchArgument('memory', default_value='false',
                              description='Also start memory_node (scene memory, '
                                          'query_memory service)'),
    ]
    ns = LaunchConfiguration('namespace')
    common = dict(package='mr_mllm_ros', namespace=ns, output='screen',
                  parameters=[LaunchConfiguration('params_file'),
                              {'use_sim_time': LaunchConfiguration('use_sim_time')}],
                  arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level')])
    perception = LifecycleNode(executable='perception_node', name='perception_node',
                               remappings=[('image', LaunchConfiguration('image_topic')),
                                           ('image/compressed', [LaunchConfiguration(
                                               'image_topic'), '/compressed'])],
                               **common)
    scene = LifecycleNode(executable='scene_node', name='scene_node',
                          condition=IfCondition(LaunchConfiguration('scene')),
                          remappings=[('image', LaunchConfiguration('image_topic'))],
                          **common)
    memory = LifecycleNode(executable='memory_node', name='memory_node',
                           condition=IfCondition(LaunchConfiguration('memory')), **common)
    return LaunchDescription(common_launch_entities(share) + args
                             + [perception, scene, memory])
