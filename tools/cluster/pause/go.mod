module redis-cluster.local/tools/cluster/pause

go 1.25.0
