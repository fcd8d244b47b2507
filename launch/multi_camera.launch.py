"""Several cameras: one perception_node per camera namespace, or one batched
perception_node serving all of them (`batched:=true`: one model in memory, a
latest-frame slot per camera, served round-robin). scene_node per camera with
`scene:=true`; one memory_node for all of them with `memory:=true`.

    ros2 launch mr_mllm_ros multi_camera.launch.py cameras:=front,rear,left
"""

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from mr_mllm_ros.launch_arguments import common_launch_entities, plan_arguments, plan_nodes
from mr_mllm_ros.topology import camera_list


def _nodes(context):
    # The same plan `mr-mllm up` starts (mr_mllm_ros/topology.py).
    return plan_nodes(context, camera_list(LaunchConfiguration('cameras').perform(context)),
                      LaunchConfiguration('batched').perform(context).lower() == 'true')


def generate_launch_description():
    share = get_package_share_directory('mr_mllm_ros')
    return LaunchDescription(common_launch_entities(share) + [
        DeclareLaunchArgument('cameras', default_value='front,rear',
                              description='Comma-separated camera namespaces'),
        DeclareLaunchArgument('batched', default_value='false',
                              description='One perception_node for all cameras'),
        *plan_arguments(),
        OpaqueFunction(function=_nodes),
    ])
