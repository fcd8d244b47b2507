"""One camera: perception_node (+ scene_node with `scene:=true`, memory_node with
`memory:=true`) in a camera namespace: the graph `mr-mllm up --namespace <ns>` starts
(mr_mllm_ros/topology.py plans both; memory_node sits in the root namespace, as with
several cameras).

    ros2 launch mr_mllm_ros perception.launch.py namespace:=front_cam \
        params_file:=/path/to/my_params.yaml

Every default lives in config/mr_mllm.yaml (the installed copy is params_file's default);
a params file of your own lists only what it changes. `image_topic` names the camera
topic (e.g. `image_topic:=/front_cam/color/image_raw`, or a name relative to the
namespace): every node that takes the camera's images is remapped to it, `image` and, for
camera.compressed, `image/compressed` -> `<image_topic>/compressed`.
"""

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from mr_mllm_ros.launch_arguments import common_launch_entities, plan_arguments, plan_nodes
from mr_mllm_ros.topology import camera_list


def _nodes(context):
    return plan_nodes(context, camera_list(LaunchConfiguration('namespace').perform(context)))


def generate_launch_description():
    share = get_package_share_directory('mr_mllm_ros')
    return LaunchDescription(common_launch_entities(share) + [
        DeclareLaunchArgument('namespace', default_value='camera',
                              description='Camera namespace: topics are <ns>/image, '
                                          '<ns>/detections, ...'),
        *plan_arguments(),
        OpaqueFunction(function=_nodes),
    ])
