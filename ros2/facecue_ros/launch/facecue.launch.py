"""ros2 launch facecue_ros facecue.launch.py source:=0 model:=/path/model.onnx [config:=...] [frame_id:=camera]"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

ARGUMENTS = {"source": "0", "model": "", "config": "", "mode": "realtime", "frame_id": "camera"}


def generate_launch_description():
    return LaunchDescription([
        *[DeclareLaunchArgument(name, default_value=value) for name, value in ARGUMENTS.items()],
        Node(package="facecue_ros", executable="facecue_node", name="facecue", output="screen",
             parameters=[{name: LaunchConfiguration(name) for name in ARGUMENTS}]),
    ])
