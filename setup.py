from glob import glob

from setuptools import find_packages, setup

package_name = 'mr_mllm_ros'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*', 'benchmarks']),
    # Prompt templates travel inside the Python package; config/ and launch/ go to
    # share/mr_mllm_ros (data_files), where core.config.share_dir finds them.
    package_data={package_name: ['prompts/*.yaml']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml') + glob('config/*.xml')
         + glob('config/*.json')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='mr_mllm_ros developers',
    maintainer_email='mr-mllm-ros@example.org',
    description='Grounded scene descriptions, corner-case alerts and VQA from camera topics '
                'with YOLO detection fused into a multimodal LLM.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'mr-mllm = mr_mllm_ros.cli:entry',
            'perception_node = mr_mllm_ros.nodes.perception_node:main',
            'scene_node = mr_mllm_ros.nodes.scene_node:main',
            'combined_nodes = mr_mllm_ros.nodes.combined:main',
            'memory_node = mr_mllm_ros.nodes.memory_node:main',
        ],
    },
)
