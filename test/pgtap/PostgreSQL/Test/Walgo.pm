# PostgreSQL's recovery TAP tests with walgo instead of cp. Loaded before
# each test (perl -M, in the prove --exec of scripts/pg-recovery-tests.sh),
# it replaces PostgreSQL::Test::Cluster's enable_archiving and
# enable_restoring: a node's archive_command and restore_command run walgo
# wal-push and wal-fetch on a walgo file repository in the node's archive
# directory (archive_dir), the one the original commands cp into and out
# of. Everything else in the tests is PostgreSQL's own. WALGO_TEST_BIN names the
# walgo binary.
package PostgreSQL::Test::Walgo;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;

my $walgo = $ENV{WALGO_TEST_BIN} or die "WALGO_TEST_BIN is not set";

# Replacing a method the Cluster module no longer has would only add an
# unused one, and the tests would run with cp again.
for my $method (qw(enable_archiving enable_restoring archive_dir _recovery_file))
{
	die "PostgreSQL::Test::Cluster has no $method: update PostgreSQL::Test::Walgo"
	  unless PostgreSQL::Test::Cluster->can($method);
}

# The option that names a node's repository in both commands.
sub storage_arg
{
	my ($node) = @_;
	return qq{--storage "file://} . $node->archive_dir . qq{"};
}

# Creates the node's repository (walgo refuses a folder that holds none);
# one made already, by the node's own enable_archiving, is fine (exit 3).
sub init_repository
{
	my ($node) = @_;
	system($walgo, '--storage', 'file://' . $node->archive_dir, '--log-level', 'warn', 'init');
	my $code = $? >> 8;
	die "walgo init of " . $node->archive_dir . " failed (exit $code)"
	  unless $? != -1 && ($? & 127) == 0 && ($code == 0 || $code == 3);
	return;
}

no warnings 'redefine';

sub PostgreSQL::Test::Cluster::enable_archiving
{
	my ($self) = @_;
	my $name = $self->name;
	my $storage = storage_arg($self);

	print "### Enabling WAL archiving with walgo for node \"$name\"\n";
	init_repository($self);
	$self->append_conf(
		'postgresql.conf', qq(
archive_mode = on
archive_command = '"$walgo" $storage wal-push "%p"'
));
	return;
}

sub PostgreSQL::Test::Cluster::enable_restoring
{
	my ($self, $root_node, $standby) = @_;
	my $name = $self->name;
	my $storage = storage_arg($root_node);

	print "### Enabling WAL restore with walgo for node \"$name\"\n";
	init_repository($root_node);
	$self->append_conf(
		$self->_recovery_file, qq(
restore_command = '"$walgo" $storage wal-fetch "%f" "%p"'
));
	if ($standby)
	{
		$self->set_standby_mode();
	}
	else
	{
		$self->set_recovery_mode();
	}
	return;
}

1;
