"""`copick-soup`: thin click commands; the logic lives in plain functions the plugin and Ray jobs share."""

import click

from copick_soup import __version__
from copick_soup.cli.demo import demo
from copick_soup.cli.finetune import finetune
from copick_soup.cli.pick import pick
from copick_soup.cli.quantise import quantise
from copick_soup.cli.score import score
from copick_soup.cli.simulate import simulate
from copick_soup.cli.soup import soup
from copick_soup.cli.threshold import threshold
from copick_soup.cli.train import train


@click.group()
@click.version_option(__version__, prog_name="copick-soup")
def main():
    """Pick particles in cryo-ET tomograms with a soup of 3D U-Nets, reading and writing copick projects."""


main.add_command(simulate)
main.add_command(pick)
main.add_command(threshold)
main.add_command(score)
main.add_command(train)
main.add_command(soup)
main.add_command(finetune)
main.add_command(quantise)
main.add_command(demo)
