"""ament_python package of the facecue ROS 2 node; facecue itself is installed with pip (README, "On a robot")."""
from glob import glob

from setuptools import setup

PACKAGE = "facecue_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    description="facecue face cues as ROS4HRI (REP-155) topics",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={"console_scripts": [f"facecue_node = {PACKAGE}.node:main"]},
)
