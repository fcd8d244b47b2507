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
from launch_ros.actions import LifecycleNode

from mr_mllm_ros.launch_arguments import common_launch_entities
from mr_mllm_ros.topology import camera_list, plan_graph


def _nodes(context):
    cameras = camera_list(LaunchConfiguration('cameras').perform(context))
    batched = LaunchConfiguration('batched').perform(context).lower() == 'true'
    scene = LaunchConfiguration('scene').perform(context).lower() == 'true'
    memory = LaunchConfiguration('memory').perform(context).lower() == 'true'
    params = [LaunchConfiguration('params_file').perform(context),
              {'use_sim_time': LaunchConfiguration('use_sim_time').perform(context) == 'true'}]
    ros_args = ['--ros-args', '--log-level', LaunchConfiguration('log_level').perform(context)]
    kinds = ('perception',) + (('scene',) if scene else ()) + (('memory',) if memory else ())
    # The same plan `mr-mllm up` starts (mr_mllm_ros/topology.py).
    return [LifecycleNode(package='mr_mllm_ros', executable=f'{p.kind}_node',
                          name=f'{p.kind}_node', namespace=p.namespace, output='screen',
                          parameters=params + ([p.parameters] if p.parameters else []),
                          arguments=ros_args)
            for p in plan_graph(cameras, kinds, batched)]


def generate_launch_description():
    share = get_package_share_directory('mr_mllm_ros')
    return LaunchDescription(common_launch_entities(share) + [
        DeclareLaunchArgument('cameras', default_value='front,rear',
                              description='Comma-separated camera namespaces'),
        DeclareLaunchArgument('batched', default_value='false',
                              description='One perception_node for all cameras'),
        DeclareLaunchArgument('scene', default_value='false',
                              description='Also start one scene_node per camera'),
        DeclareLaunchArgument('memory', default_value='false',
                              description='Also start one memory_node for all cameras '
                                          '(query_memory service)'),
        OpaqueFunction(function=_nodes),
    ])
